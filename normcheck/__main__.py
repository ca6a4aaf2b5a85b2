from normcheck.cli import main

main()
