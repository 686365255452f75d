"""HTTP layer: request/response schemas, dependencies, one router per resource, error mapping."""
