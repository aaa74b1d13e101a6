"""Analyses of finished runs beyond the COCO summary numbers (error breakdowns, proposals)."""
