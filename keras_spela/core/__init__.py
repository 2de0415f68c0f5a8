"""The math and the batch gate: the local rules written once over their
primitives, the fixed class vectors, and batch acceptance."""
