"""Predict new inputs: ``python predict.py ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt data.path=new.csv``."""

from expkit.tasks.predict import main

if __name__ == "__main__":
    main()
