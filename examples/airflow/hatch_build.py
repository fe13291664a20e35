# The build backend's hooks.
