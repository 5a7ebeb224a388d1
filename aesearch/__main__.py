from aesearch.interfaces.cli import main

main()
