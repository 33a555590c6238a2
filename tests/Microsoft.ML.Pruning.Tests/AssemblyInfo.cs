// Licensed under the MIT license.

using Microsoft.VisualStudio.TestTools.UnitTesting;

// TorchSharp's random seed and thread pool are process-wide.
[assembly: DoNotParallelize]
