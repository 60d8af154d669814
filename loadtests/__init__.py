"""Load tests and benchmark drivers: the figures in the README come from here. Not part of a
production image (``.dockerignore``); ``clipsearch bench`` runs them from a source checkout."""
