"""Roman numerals over HTTP: the program of the three-stage example."""
