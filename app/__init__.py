"""mammogen's front end: settings, the HTTP API and the command line. Reads settings; never runs a model itself."""
