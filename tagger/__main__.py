from tagger.cli import main

main()
