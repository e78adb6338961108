"""btxrd runtime."""
