"""Pipeline stages, one module per `dvc.yaml` stage; each module docstring gives its command."""
