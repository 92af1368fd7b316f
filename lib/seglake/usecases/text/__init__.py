"""Text clusters: short texts or hashtags embedded, clustered per group, with keywords."""
