// Licensed under the MIT license.

using System;
using System.Collections.Generic;

namespace Microsoft.ML.Pruning.Networks
{
    /// <summary>The image-classifier architectures the trainer can build.</summary>
    public enum ImageClassifierArchitecture
    {
        /// <summary>LeNet-300-100: a 300-100 multilayer perceptron on the flattened image (LeCun et al.).</summary>
        LeNet300100,

        /// <summary>LeNet-5: two 5×5 convolutions with pooling, then fully connected layers 120-84.</summary>
        LeNet5,

        /// <summary>A small VGG-style network: 3×3 convolutions with batch norm (32,32,pool,64,64,pool,128,pool), then FC 256.
        /// The channel counts scale with a width multiplier (<see cref="Architectures.Create"/>).</summary>
        VggSmall,

        /// <summary>ResNet-20 for small images (He et al., CIFAR variant): 3 stages of 3 basic blocks, 16/32/64 channels.
        /// The channel counts scale with a width multiplier (<see cref="Architectures.Create"/>).</summary>
        ResNet20,
    }

    /// <summary>Builds the <see cref="NetworkDefinition"/> of each <see cref="ImageClassifierArchitecture"/>.</summary>
    public static class Architectures
    {
        /// <summary>The short name used in reports and benchmark rows.</summary>
        public static string ShortName(ImageClassifierArchitecture architecture) => architecture switch
        {
            ImageClassifierArchitecture.LeNet300100 => "lenet300",
            ImageClassifierArchitecture.LeNet5 => "lenet5",
            ImageClassifierArchitecture.VggSmall => "vgg-small",
            ImageClassifierArchitecture.ResNet20 => "resnet20",
            _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "Unknown architecture."),
        };

        /// <summary>Creates the definition for images of <paramref name="input"/> shape and <paramref name="classes"/> classes.</summary>
        /// <param name="architecture">The architecture.</param>
        /// <param name="input">Image shape, channels first.</param>
        /// <param name="classes">Number of classes, at least 2.</param>
        /// <param name="normalization">Optional per-channel input standardization placed in front of the network.</param>
        /// <param name="convolution">What the 3×3 convolutions after the stem are made of (VggSmall and ResNet20 only).</param>
        /// <param name="kernelSize">The kernel size of those layers: odd, at least 1 (at most 15 for the shift kinds). Default 3.</param>
        /// <param name="width">
        /// A multiplier on the channel counts of every convolution (VggSmall and ResNet20 only): each layer of <c>c</c>
        /// channels gets <c>Math.Max(1, (int)Math.Round(c * width))</c> (nearest integer, ties to even), the layers that
        /// read them follow, and the fully connected hidden layer of VggSmall keeps its 256 units. Finite and greater than 0.
        /// Default 1 (the published channel counts).
        /// </param>
        /// <exception cref="ArgumentException">The image is too small for the architecture, or fewer than 2 classes, or a LeNet
        /// with another convolution kind, kernel size or width.</exception>
        /// <exception cref="ArgumentOutOfRangeException">An unknown convolution kind, an even or non-positive kernel size, or a
        /// width that is not a finite number greater than 0.</exception>
        public static NetworkDefinition Create(ImageClassifierArchitecture architecture, ImageShape input, int classes, NormalizeLayer? normalization = null,
            ConvolutionKind convolution = ConvolutionKind.Convolution, int kernelSize = 3, double width = 1.0)
        {
            input.Validate();
            if (classes < 2)
                throw new ArgumentException($"A classifier needs at least 2 classes; got {classes}.", nameof(classes));
            if (!Enum.IsDefined(convolution))
                throw new ArgumentOutOfRangeException(nameof(convolution), convolution, "Unknown convolution kind.");
            if (kernelSize < 1 || kernelSize % 2 == 0 || (convolution != ConvolutionKind.Convolution && kernelSize > ShiftLayerShapes.MaxKernelSize))
                throw new ArgumentOutOfRangeException(nameof(kernelSize), kernelSize, $"The kernel size must be odd and at least 1 (at most {ShiftLayerShapes.MaxKernelSize} for shift layers); got {kernelSize}.");
            if (architecture is ImageClassifierArchitecture.LeNet300100 or ImageClassifierArchitecture.LeNet5
                && (convolution != ConvolutionKind.Convolution || kernelSize != 3))
                throw new ArgumentException($"{architecture} has no 3x3 convolutions to replace; use VggSmall or ResNet20 for {convolution} layers of size {kernelSize}.", nameof(convolution));
            if (!double.IsFinite(width) || width <= 0)
                throw new ArgumentOutOfRangeException(nameof(width), width, FormattableString.Invariant($"The width must be a finite number greater than 0; got {width}."));
            if (architecture is ImageClassifierArchitecture.LeNet300100 or ImageClassifierArchitecture.LeNet5 && width != 1)
            {
                throw new ArgumentException(FormattableString.Invariant(
                    $"{architecture} has a fixed shape; a width multiplier ({width}) applies to VggSmall and ResNet20 only."), nameof(width));
            }

            var layers = new List<LayerDefinition>();
            if (normalization is not null)
                layers.Add(normalization);
            layers.AddRange(architecture switch
            {
                ImageClassifierArchitecture.LeNet300100 => LeNet300100(input, classes),
                ImageClassifierArchitecture.LeNet5 => LeNet5(input, classes),
                ImageClassifierArchitecture.VggSmall => VggSmall(input, classes, convolution, kernelSize, width),
                ImageClassifierArchitecture.ResNet20 => ResNet20(input, classes, convolution, kernelSize, width),
                _ => throw new ArgumentOutOfRangeException(nameof(architecture), architecture, "Unknown architecture."),
            });

            var definition = new NetworkDefinition { Architecture = ShortName(architecture), Input = input, Classes = classes, Layers = layers };
            try
            {
                definition.Validate();
            }
            catch (InvalidOperationException ex)
            {
                throw new ArgumentException($"{architecture} cannot take {input} images: {ex.Message}", nameof(input), ex);
            }
            return definition;
        }

        private static IEnumerable<LayerDefinition> LeNet300100(ImageShape input, int classes) => new LayerDefinition[]
        {
            new FlattenLayer { Name = "flatten" },
            new LinearLayer { Name = "fc1", InFeatures = input.Size, OutFeatures = 300 },
            new ReluLayer { Name = "relu1" },
            new LinearLayer { Name = "fc2", InFeatures = 300, OutFeatures = 100 },
            new ReluLayer { Name = "relu2" },
            new LinearLayer { Name = "fc3", InFeatures = 100, OutFeatures = classes },
        };

        private static IEnumerable<LayerDefinition> LeNet5(ImageShape input, int classes)
        {
            // conv1 keeps the size (padding 2, as LeCun's 32×32 input had for 28×28 digits); conv2 is unpadded.
            int h = (input.Height / 2 - 4) / 2, w = (input.Width / 2 - 4) / 2;
            if (h < 1 || w < 1)
                throw new ArgumentException($"LeNet5 needs images of at least 12x12; got {input}.", nameof(input));
            return new LayerDefinition[]
            {
                new Conv2dLayer { Name = "conv1", InChannels = input.Channels, OutChannels = 6, KernelSize = 5, Padding = 2 },
                new ReluLayer { Name = "relu1" },
                new MaxPool2dLayer { Name = "pool1" },
                new Conv2dLayer { Name = "conv2", InChannels = 6, OutChannels = 16, KernelSize = 5 },
                new ReluLayer { Name = "relu2" },
                new MaxPool2dLayer { Name = "pool2" },
                new FlattenLayer { Name = "flatten" },
                new LinearLayer { Name = "fc1", InFeatures = 16 * h * w, OutFeatures = 120 },
                new ReluLayer { Name = "relu3" },
                new LinearLayer { Name = "fc2", InFeatures = 120, OutFeatures = 84 },
                new ReluLayer { Name = "relu4" },
                new LinearLayer { Name = "fc3", InFeatures = 84, OutFeatures = classes },
            };
        }

        /// <summary>The channel count of a layer of <paramref name="baseChannels"/> channels at <paramref name="width"/>.</summary>
        internal static int Channels(int baseChannels, double width) => Math.Max(1, (int)Math.Round(baseChannels * width));

        private static IEnumerable<LayerDefinition> VggSmall(ImageShape input, int classes, ConvolutionKind convolution, int kernelSize, double width)
        {
            int h = input.Height / 8, w = input.Width / 8;
            if (h < 1 || w < 1)
                throw new ArgumentException($"VggSmall needs images of at least 8x8; got {input}.", nameof(input));
            var layers = new List<LayerDefinition>();
            int inChannels = input.Channels, index = 0, pool = 0;
            foreach (int baseChannels in new[] { 32, 32, 0, 64, 64, 0, 128, 0 })
            {
                if (baseChannels == 0)
                {
                    layers.Add(new MaxPool2dLayer { Name = $"pool{++pool}" });
                    continue;
                }
                index++;
                int channels = Channels(baseChannels, width);
                // The stem sees the raw image (1 channel for grey images): it stays a 3×3 convolution.
                layers.AddRange(index == 1
                    ? ConvBnRelu($"conv{index}", $"bn{index}", $"relu{index}", inChannels, channels, stride: 1)
                    : ConvBnRelu($"conv{index}", $"bn{index}", $"relu{index}", inChannels, channels, stride: 1, convolution, kernelSize));
                inChannels = channels;
            }
            layers.Add(new FlattenLayer { Name = "flatten" });
            layers.Add(new LinearLayer { Name = "fc1", InFeatures = inChannels * h * w, OutFeatures = 256 });
            layers.Add(new ReluLayer { Name = "relu_fc1" });
            layers.Add(new LinearLayer { Name = "fc2", InFeatures = 256, OutFeatures = classes });
            return layers;
        }

        private static IEnumerable<LayerDefinition> ResNet20(ImageShape input, int classes, ConvolutionKind convolution, int kernelSize, double width)
        {
            int inChannels = Channels(16, width);
            var layers = new List<LayerDefinition>(ConvBnRelu("conv1", "bn1", "relu1", input.Channels, inChannels, stride: 1));
            int[] widths = { Channels(16, width), Channels(32, width), Channels(64, width) };
            for (int stage = 0; stage < widths.Length; stage++)
            {
                for (int block = 0; block < 3; block++)
                {
                    int stride = stage > 0 && block == 0 ? 2 : 1;
                    int outChannels = widths[stage];
                    var body = new List<LayerDefinition>(ConvBnRelu("conv1", "bn1", "relu1", inChannels, outChannels, stride, convolution, kernelSize));
                    body.Add(Conv("conv2", outChannels, outChannels, stride: 1, convolution, kernelSize));
                    body.Add(new BatchNorm2dLayer { Name = "bn2", Channels = outChannels });
                    var shortcut = stride != 1 || inChannels != outChannels
                        ? new LayerDefinition[]
                        {
                            new Conv2dLayer { Name = "conv", InChannels = inChannels, OutChannels = outChannels, KernelSize = 1, Stride = stride, Bias = false },
                            new BatchNorm2dLayer { Name = "bn", Channels = outChannels },
                        }
                        : Array.Empty<LayerDefinition>();
                    layers.Add(new ResidualBlock { Name = $"stage{stage + 1}_{block}", Body = body, Shortcut = shortcut });
                    inChannels = outChannels;
                }
            }
            layers.Add(new GlobalAvgPoolLayer { Name = "pool" });
            layers.Add(new LinearLayer { Name = "fc", InFeatures = inChannels, OutFeatures = classes });
            return layers;
        }

        private static LayerDefinition[] ConvBnRelu(string conv, string bn, string relu, int inChannels, int outChannels, int stride,
            ConvolutionKind convolution = ConvolutionKind.Convolution, int kernelSize = 3) => new LayerDefinition[]
        {
            Conv(conv, inChannels, outChannels, stride, convolution, kernelSize),
            new BatchNorm2dLayer { Name = bn, Channels = outChannels },
            new ReluLayer { Name = relu },
        };

        /// <summary>A k×k layer of the given kind, without bias (batch norm follows), padded to keep the size.</summary>
        private static LayerDefinition Conv(string name, int inChannels, int outChannels, int stride, ConvolutionKind convolution, int kernelSize) => convolution switch
        {
            ConvolutionKind.Convolution => new Conv2dLayer
            {
                Name = name, InChannels = inChannels, OutChannels = outChannels, KernelSize = kernelSize, Stride = stride, Padding = kernelSize / 2, Bias = false,
            },
            ConvolutionKind.Shift => new ShiftConv2dLayer
            {
                Name = name, InChannels = inChannels, OutChannels = outChannels, KernelSize = kernelSize, Stride = stride, Padding = kernelSize / 2, Bias = false,
            },
            ConvolutionKind.ShiftAttention or ConvolutionKind.ShiftAttentionShared => new ShiftAttentionConv2dLayer
            {
                Name = name, InChannels = inChannels, OutChannels = outChannels, KernelSize = kernelSize, Stride = stride, Padding = kernelSize / 2,
                Shared = convolution == ConvolutionKind.ShiftAttentionShared, Bias = false,
            },
            _ => throw new ArgumentOutOfRangeException(nameof(convolution), convolution, "Unknown convolution kind."),
        };
    }
}
