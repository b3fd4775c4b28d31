"""Studies behind the README's tables: experiments run together with their own baselines and figures."""
