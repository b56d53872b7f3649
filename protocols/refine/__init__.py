"""Refinement family (issue 12): EMAN2 e2refine projection matching."""
