"""The shipped training recipes: YAML files of ``TrainConfig`` settings (``resnets recipes`` lists them)."""
