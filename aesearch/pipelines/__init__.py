"""The jobs that drive the layers below: building an index bundle."""
