"""``bench gpu`` on a GPU machine without network: ``pack`` makes the bundle,
``run-on-gpu-machine.sh`` runs it there (bench/README.md, "The model server on a GPU")."""
