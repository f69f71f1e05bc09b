"""Configurations of the IWAE experiment; each file has ``get_config()``."""
