"""Tables and plots from results.json."""
