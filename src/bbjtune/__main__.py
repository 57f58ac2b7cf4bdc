from bbjtune.cli import main

main()
