"""Datasets: the Memory Horizon task (paper Appendix A)."""
