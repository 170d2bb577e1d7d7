"""Problems: the benchmark registry and loaders, the generated arith world, the prompt."""
