"""eqflow: Equilibrium flow, dynamics that preserve a distribution known only from snapshots."""

__version__ = "0.1.0"
