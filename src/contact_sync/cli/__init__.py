"""The contact-sync command line."""
