"""Every knob of the template workload, typed, with its default and what it does."""
from dataclasses import dataclass

from orchestrator.config import knob
from orchestrator.federated.config import FederatedTrainingConfig

METHODS = ("fedavg", "fedprox")


@dataclass
class FedProxConfig:
    federation: FederatedTrainingConfig = knob(factory=FederatedTrainingConfig)
    methods: list[str] = knob(list(METHODS), "methods compared, one MLflow child run each",
                              choices=METHODS)
    mu: float = knob(0.1, "FedProx proximal weight mu (Li et al. 2020, Eq. 2)", ge=0)
    train_digits: int = knob(2000, "MNIST training digits split over the devices", ge=1, le=8000)
    hidden: int = knob(32, "hidden units of the MLP", ge=1)
    local_steps: int = knob(5, "SGD steps per device per round", ge=1)
    batch_size: int = knob(32, "local batch size", ge=1)
    lr: float = knob(0.1, "local SGD learning rate", gt=0)
