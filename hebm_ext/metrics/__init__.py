"""Evaluation metrics: FID (local Inception weights, never downloaded), a digits FID for the embedded data,
reconstruction MSE, MMD, and anomaly-detection AUPRC / AUROC with the MNIST held-out-digit protocol."""
from .anomaly import RelabeledSubset, auprc, auroc, heldout_digit_split
from .digits import DigitsFeatureNet, digits_feature_extractor, digits_fid, digits_stats
from .fid import FeatureStats, feature_stats, fid_from_stats, inception_stats, load_stats, save_stats
from .inception import FIDInceptionV3, load_fid_inception
from .mmd import median_bandwidth, mmd
from .recon import reconstruction_mse

__all__ = [
    "DigitsFeatureNet", "FIDInceptionV3", "FeatureStats", "RelabeledSubset", "auprc", "auroc",
    "digits_feature_extractor", "digits_fid", "digits_stats", "feature_stats", "fid_from_stats",
    "heldout_digit_split", "inception_stats", "load_fid_inception", "load_stats", "median_bandwidth", "mmd",
    "reconstruction_mse", "save_stats",
]
