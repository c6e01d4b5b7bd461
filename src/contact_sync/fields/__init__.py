"""Typed custom fields (docs/design.md §13): definitions, coercion, the extraction schema."""
