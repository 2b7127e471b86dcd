"""The device side: run an exported ONNX model with no torch.

Imports only numpy, onnxruntime, soundfile and soxr (sounddevice lazily, inside
the function that opens a microphone). Never torch, torchaudio or onnx: a test
runs verify/bench/listen with those made unimportable.

Modules, one concern each:
  model       load_model(path) -> Recogniser (metadata + onnxruntime session)
  dataset     labelled clips on the device (Speech Commands layout, CSV), which_split
  verify      accuracy / per-class / confusion of a split, pass/fail against the goal
  devices     device profiles (devices/*.toml)
  bench       front-end cost, latency, real-time factor, memory against a profile
  stream      the streaming engine: ring of frames, hop inference, smoothing, detections
  listen      file, stdin or microphone into the engine
  level       input level (dBFS) and energy voice-activity detection
  record      prompted recording of the user's voice into a Speech Commands folder
  check       `listen --check`: live accuracy on prompted words against the goal
  streameval  long test streams with truth, streaming accuracy, calibration

This package's __init__ imports nothing, so importing one module
costs no onnxruntime start-up.
"""
