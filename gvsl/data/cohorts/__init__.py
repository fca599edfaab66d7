"""The generated cohorts of the default profile: subjects made by the kit, with their labels.

- :mod:`gvsl.data.cohorts.phantom` — chest CTs (body, lungs, heart, coronaries, vessels; pose, size and contrast
  that differ between subjects), with :mod:`~gvsl.data.cohorts.phantom_heart` the heart's chambers and vessels;
- :mod:`gvsl.data.cohorts.brain` — brain MRs from the MNI152 template nilearn ships, warped per subject;
- :mod:`gvsl.data.cohorts.shapes`, :mod:`gvsl.data.cohorts.splines` — the smooth shapes and deformations both use.

:mod:`gvsl.data.sources.generated` prepares them as it prepares a real dataset.
"""
