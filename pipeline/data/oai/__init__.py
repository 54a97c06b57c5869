"""Import an Osteoarthritis Initiative (OAI) image release into paired, cropped, graded datalists.

OAI ships its images as ``<timepoint>/<release>/<ParticipantID>/<yyyymmdd>/<series folder>``
with one ``contents.csv`` index per release, and its Kellgren-Lawrence grades in
``kxr_sq_bu*.txt`` files. The modules here, one job each:

- :mod:`.layout`: the facts about that layout (release -> visit, V-prefixes, series kinds);
- :mod:`.index`: read the ``contents.csv`` indexes;
- :mod:`.grades`: read the ``kxr_sq_bu`` grade files (plain or labelled) and choose a reading project;
- :mod:`.pairing`: pair one knee radiograph with one MRI series per participant, visit, side;
- :mod:`.build`: put it together into datalist items with crop boxes and grades (knees placed by
  :class:`xray2mri.transforms.locate_knee.LocateKnee`, the transform training and serving use);
- :mod:`.export`: optionally write the knee crops as derived DICOM files;
- :mod:`.synth_tree`: a SYNTHETIC tree in OAI's exact layout, for tests, benchmarks and demos;
- the ``manifest build --oai-root`` and ``synth --layout oai`` options live with the commands
  (:mod:`xray2mri.pipeline.commands._oai_options`).
"""
