"""BuildKit as the Docker engine exposes it: progress messages and their decoding."""
