"""One router per resource; routes are thin: validate, admit, enqueue or read."""
