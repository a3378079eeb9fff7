"""The inbox service's library: which files are acquisitions, when one is complete, where its
outputs go, and what was processed and announced. ``deployments/`` serves it through Prefect.
"""
