"""NeuMeta's hypernetwork: weight coordinates, the INR over them, TSP smoothing, the generator."""
