"""Setup shared by the experiment drivers (config strings, config checks, flag parsing)."""
