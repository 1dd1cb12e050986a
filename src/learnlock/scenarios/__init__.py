"""Scenarios: who trains what on published data, and what it measures. Each takes folders and
dataset specs (what the CLI forwards) as well as loaded datasets.

    opening      the one way a published folder is opened (open_published: key, clean source, test set),
                 and made once for a bench (publish_once, protected_cell)
    authorized   the one way a key's network is trained (train_authorized, its cached cell, train_published)
    table1       the authorized network vs hackers beside the clean source (UGE's Table 1)
    audit        every attack on a published dataset, cached per cell and resumable
    federated    clients protect their shards against one global network; table9: its result
    certify      certified (q, eta)-learnability by parametric smoothing (PUE)
    evaluation   clean test accuracy of any networks on any dataset
"""

from .authorized import authorized_cell, train_authorized, train_published
from .audit import AuditResult, audit, audit_folder, load_cells, resolve_attacks
from .certify import Certificate, CertifySettings, certify, certify_accuracies, certify_folder, train_surrogate
from .evaluation import evaluate_nets, evaluate_specs, results_table
from .federated import FederatedResult, federate, run_federated, split_shards, table9_markdown
from .opening import Opened, open_published, protected_cell, publish_once
from .table1 import Hacker, Table1, authorized_vs_hackers, ratios, table1, table1_markdown, without_seeds

__all__ = [
    "AuditResult", "Certificate", "CertifySettings", "FederatedResult", "Hacker", "Opened", "Table1", "audit",
    "audit_folder", "authorized_cell", "authorized_vs_hackers", "certify", "certify_accuracies",
    "certify_folder", "evaluate_nets", "evaluate_specs", "federate", "load_cells", "open_published",
    "protected_cell", "publish_once", "ratios", "resolve_attacks", "results_table", "run_federated", "split_shards",
    "table1", "table1_markdown", "table9_markdown", "train_authorized", "train_published", "train_surrogate", "without_seeds",
]
