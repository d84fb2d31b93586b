from tagger.cli import entry

entry()
