"""The valid points of a SeenUnseenCurve as NumPy arrays, for the calibration tests."""

import numpy as np


def valid_points(curve):
  """(gammas (P,), accuracies (P, 3): acc_seen, acc_unseen, acc_all) of the valid points."""
  v = np.asarray(curve.valid)
  return (np.asarray(curve.gammas)[v],
          np.stack([np.asarray(curve.acc_seen)[v],
                    np.asarray(curve.acc_unseen)[v],
                    np.asarray(curve.acc_all)[v]], 1))
