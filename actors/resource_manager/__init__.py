"""The resource manager actor: a site's grid-connection interface."""
