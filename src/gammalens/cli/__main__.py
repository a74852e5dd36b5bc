"""``python -m gammalens.cli``: the ``gammalens`` command (:func:`gammalens.cli.app.main`)."""

from gammalens.cli.app import main

if __name__ == "__main__":
    main()
