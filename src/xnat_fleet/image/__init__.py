"""The relay image pipeline: recipes, assembling a disk without mounts, bmap, sealing, audit.

docs/images.md describes the stages and what each one guarantees.
"""
