from aesearch.interfaces.cli import main

# Guarded: Dask (build-index --cluster local) starts its workers by spawning, which re-imports this
# module; unguarded, each worker would run the command line again.
if __name__ == "__main__":
    main()
