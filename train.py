"""Train: ``python train.py model=cnn data=digits trainer.max_epochs=20`` (see ``--help``)."""

from expkit.tasks.train import main

if __name__ == "__main__":
    main()
