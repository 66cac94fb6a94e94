"""Code generators, one folder per backend (a printer and its config): torch, cpu, cuda."""
