"""`python -m cervix_jax.data ...` is the builders' command line."""
from cervix_jax.data.builders import main

if __name__ == "__main__":
    main()
