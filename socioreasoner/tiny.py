"""`python -m socioreasoner.tiny`: tiny random models of the real architectures, kept where users call it; the code is `socioreasoner.models.tiny`."""

from socioreasoner.models.tiny import main

if __name__ == "__main__":
    main()
