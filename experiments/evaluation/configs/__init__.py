"""Configurations of the evaluation study; each file has ``get_config()``."""
