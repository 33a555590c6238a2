// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Runtime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Networks
{
    [TestClass]
    public sealed class ChannelGroupsTests
    {
        private static readonly ImageShape s_mnist = new(1, 28, 28);

        private static NetworkDefinition Definition(ImageClassifierArchitecture architecture, double width = 1, ConvolutionKind kind = ConvolutionKind.Convolution)
            => Architectures.Create(architecture, s_mnist, 10, new NormalizeLayer { Name = "normalize", Mean = new[] { 0.3f }, Std = new[] { 0.35f } }, kind, width: width);

        private static string Describe(ChannelGroup group, ChannelRole role)
            => string.Join(" ", group.Members.Where(m => m.Role == role).Select(m => m.BlockSize > 1 ? $"{m.Path}x{m.BlockSize}" : m.Path));

        [TestMethod]
        public void LeNetGroupsAreTheHiddenUnitsAndTheFlattenedChannels()
        {
            var lenet300 = ChannelGroups.Find(Definition(ImageClassifierArchitecture.LeNet300100)).Where(g => g.Prunable).ToList();
            CollectionAssert.AreEqual(new[] { "fc1", "fc2" }, lenet300.Select(g => g.Name).ToArray());
            CollectionAssert.AreEqual(new[] { 300, 100 }, lenet300.Select(g => g.Channels).ToArray());
            Assert.AreEqual("fc2", Describe(lenet300[0], ChannelRole.Consumer));
            Assert.AreEqual("fc3", Describe(lenet300[1], ChannelRole.Consumer));

            var all5 = ChannelGroups.Find(Definition(ImageClassifierArchitecture.LeNet5));
            var lenet5 = all5.Where(g => g.Prunable).ToList();
            CollectionAssert.AreEqual(new[] { "conv1", "conv2", "fc1", "fc2" }, lenet5.Select(g => g.Name).ToArray());
            // conv2's 16 channels of 5x5 reach fc1 as blocks of 25 inputs.
            Assert.AreEqual("fc1x25", Describe(lenet5[1], ChannelRole.Consumer));
            Assert.AreEqual("conv2", Describe(lenet5[0], ChannelRole.Consumer));
            // The logits are the network's output: their group exists and is fixed.
            ChannelGroup logits = all5.Single(g => g.Name == "fc3");
            Assert.IsFalse(logits.Prunable);
            StringAssert.Contains(logits.UnprunableReason, "output");
        }

        [TestMethod]
        public void VggGroupsFollowEveryConvolutionWithItsBatchNormAndTheFirstFullyConnectedLayer()
        {
            var groups = ChannelGroups.Find(Definition(ImageClassifierArchitecture.VggSmall)).Where(g => g.Prunable).ToList();
            CollectionAssert.AreEqual(new[] { "conv1", "conv2", "conv3", "conv4", "conv5", "fc1" }, groups.Select(g => g.Name).ToArray());
            CollectionAssert.AreEqual(new[] { 32, 32, 64, 64, 128, 256 }, groups.Select(g => g.Channels).ToArray());
            ChannelGroup conv3 = groups[2];
            Assert.AreEqual("conv3", Describe(conv3, ChannelRole.Producer));
            Assert.AreEqual("bn3", Describe(conv3, ChannelRole.Follower));
            Assert.AreEqual("conv4", Describe(conv3, ChannelRole.Consumer));
            Assert.IsFalse(conv3.IsResidual);
            // conv5's 128 channels, pooled to 3x3, reach fc1 as blocks of 9 inputs.
            Assert.AreEqual("fc1x9", Describe(groups[4], ChannelRole.Consumer));
        }

        [TestMethod]
        public void ResNet20HasNineBlockGroupsAndOneResidualGroupPerStage()
        {
            var groups = ChannelGroups.Find(Definition(ImageClassifierArchitecture.ResNet20)).Where(g => g.Prunable).ToList();
            Assert.AreEqual(12, groups.Count);
            Assert.AreEqual(3, groups.Count(g => g.IsResidual));

            ChannelGroup stage1 = groups.Single(g => g.Name == "conv1");
            Assert.IsTrue(stage1.IsResidual);
            Assert.AreEqual(16, stage1.Channels);
            Assert.AreEqual("conv1 stage1_0.body.conv2 stage1_1.body.conv2 stage1_2.body.conv2", Describe(stage1, ChannelRole.Producer));
            Assert.AreEqual("bn1 stage1_0.body.bn2 stage1_1.body.bn2 stage1_2.body.bn2", Describe(stage1, ChannelRole.Follower));
            Assert.AreEqual("stage1_0.body.conv1 stage1_1.body.conv1 stage1_2.body.conv1 stage2_0.body.conv1 stage2_0.shortcut.conv",
                Describe(stage1, ChannelRole.Consumer));

            ChannelGroup stage2 = groups.Single(g => g.Name == "stage2_0.body.conv2");
            Assert.AreEqual("stage2_0.body.conv2 stage2_0.shortcut.conv stage2_1.body.conv2 stage2_2.body.conv2", Describe(stage2, ChannelRole.Producer));
            Assert.AreEqual("stage2_1.body.conv1 stage2_2.body.conv1 stage3_0.body.conv1 stage3_0.shortcut.conv", Describe(stage2, ChannelRole.Consumer));

            ChannelGroup stage3 = groups.Single(g => g.Name == "stage3_0.body.conv2");
            Assert.AreEqual(64, stage3.Channels);
            Assert.AreEqual("stage3_1.body.conv1 stage3_2.body.conv1 fc", Describe(stage3, ChannelRole.Consumer));

            ChannelGroup inner = groups.Single(g => g.Name == "stage2_0.body.conv1");
            Assert.IsFalse(inner.IsResidual);
            Assert.AreEqual(32, inner.Channels);
            Assert.AreEqual("stage2_0.body.bn1", Describe(inner, ChannelRole.Follower));
            Assert.AreEqual("stage2_0.body.conv2", Describe(inner, ChannelRole.Consumer));
        }

        [TestMethod]
        public void LayersThatCannotLoseChannelsMakeTheirGroupsFixed()
        {
            // Fixed shifts follow the channel index, so the channels a shift layer reads cannot be removed.
            var groups = ChannelGroups.Find(Definition(ImageClassifierArchitecture.VggSmall, kind: ConvolutionKind.Shift));
            Assert.IsFalse(groups.Single(g => g.Name == "conv1").Prunable);
            StringAssert.Contains(groups.Single(g => g.Name == "conv1").UnprunableReason, "'conv2' (ShiftConv2dLayer)");
            Assert.IsTrue(groups.Single(g => g.Name == "fc1").Prunable);
        }

        [TestMethod]
        public void TheWalkerGivesPathsAndShapesOfNestedBlocks()
        {
            var sites = NetworkWalker.Walk(Definition(ImageClassifierArchitecture.ResNet20)).ToDictionary(s => s.Path);
            LayerSite conv = sites["stage2_0.body.conv1"];
            CollectionAssert.AreEqual(new[] { 16, 28, 28 }, conv.InputShape);
            CollectionAssert.AreEqual(new[] { 32, 14, 14 }, conv.OutputShape);
            Assert.AreEqual("stage2_0.body.", conv.Scope);
            Assert.IsInstanceOfType<BatchNorm2dLayer>(conv.Next);
            CollectionAssert.AreEqual(new[] { 32, 14, 14 }, sites["stage2_0.shortcut.bn"].OutputShape);
            Assert.AreEqual(1 + 3 + 9 * (1 + 5) + 2 * 2 + 2, sites.Count, "normalize, stem (3), 9 blocks with 5 body layers each, 2 projections of 2, pool, fc");
        }

        /// <summary>Random weights and batch-norm statistics, so that every channel matters.</summary>
        private static ClassifierNetwork RandomNetwork(NetworkDefinition definition, int seed)
        {
            torch.random.manual_seed(seed);
            var network = ClassifierNetwork.Create(definition);
            using var noGrad = no_grad();
            foreach (var (name, value) in network.StateDictionary())
            {
                if (name.EndsWith("running_var", StringComparison.Ordinal))
                    value.copy_(rand_like(value) + 0.5);
                else if (name.EndsWith("running_mean", StringComparison.Ordinal) || name.EndsWith(".bias", StringComparison.Ordinal))
                    value.copy_(randn_like(value) * 0.1);
                else if (value.dtype == ScalarType.Float32 && name.Contains(".bn", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal))
                    value.copy_(rand_like(value) + 0.5);
            }
            network.Module.eval();
            return network;
        }

        /// <summary>Keeps a random subset (about 60%) of every prunable group's channels.</summary>
        private static ChannelSelection RandomSelection(NetworkDefinition definition, int seed, bool residual = true)
        {
            var random = new Random(seed);
            return new ChannelSelection(ChannelGroups.Find(definition).Where(g => g.Prunable && (residual || !g.IsResidual)).Select(g =>
            {
                long[] kept = Enumerable.Range(0, g.Channels).Where(_ => random.NextDouble() < 0.6).Select(c => (long)c).ToArray();
                return (g, kept.Length == 0 ? new long[] { g.Channels - 1 } : kept);
            }).ToArray());
        }

        [TestMethod]
        [DataRow(ImageClassifierArchitecture.LeNet300100, 1.0)]
        [DataRow(ImageClassifierArchitecture.LeNet5, 1.0)]
        [DataRow(ImageClassifierArchitecture.VggSmall, 1.0)]
        [DataRow(ImageClassifierArchitecture.VggSmall, 1.35)]
        [DataRow(ImageClassifierArchitecture.ResNet20, 1.0)]
        public void RemovingChannelsComputesWhatTheNetworkWithThoseChannelsZeroedComputes(ImageClassifierArchitecture architecture, double width)
        {
            NetworkDefinition definition = Definition(architecture, width);
            using ClassifierNetwork dense = RandomNetwork(definition, 11);
            ChannelSelection selection = RandomSelection(definition, 5);
            Assert.IsTrue(selection.RemovesAny);
            using ClassifierNetwork pruned = ChannelSurgery.Remove(dense, selection);
            using ClassifierNetwork masked = dense.Clone();
            ChannelSurgery.ZeroRemoved(masked, selection);

            // The definition shrank exactly: every group's members now have its kept count.
            var prunedGroups = ChannelGroups.Find(pruned.Definition).Where(g => g.Prunable).ToDictionary(g => g.Name);
            foreach (var (group, kept) in selection.Groups)
                Assert.AreEqual(kept.Length, prunedGroups[group.Name].Channels, group.Name);
            Assert.IsTrue(pruned.Definition.MultiplyAccumulates() < definition.MultiplyAccumulates());

            using var scope = NewDisposeScope();
            torch.random.manual_seed(2);
            Tensor images = rand(7, 1, 28, 28);
            Tensor expected = masked.Predict(images);
            Tensor actual = pruned.Predict(images);
            Assert.IsTrue(expected.allclose(actual, rtol: 0, atol: 1e-4), $"libtorch: largest difference {(expected - actual).abs().max().item<float>()}");
            // And the compact runtime, which compiles residual blocks too.
            float[] pixels = images.data<float>().ToArray();
            var compact = new float[7 * 10];
            pruned.Predict(pixels, compact);
            Tensor runtime = tensor(compact).view(7, 10);
            Assert.IsTrue(expected.allclose(runtime, rtol: 0, atol: 1e-4), $"compact runtime: largest difference {(expected - runtime).abs().max().item<float>()}");
        }

        [TestMethod]
        public void TheCompactRuntimeCompilesResidualBlocksIntoItsOwnSteps()
        {
            using ClassifierNetwork network = RandomNetwork(Definition(ImageClassifierArchitecture.ResNet20), 3);
            InferencePlan plan = network.CompiledForm()!;
            var blocks = plan.Steps.OfType<ResidualStep>().ToList();
            Assert.AreEqual(9, blocks.Count);
            Assert.IsFalse(plan.Steps.Any(s => s.Kind.Contains("ResidualBlock", StringComparison.Ordinal)));
            Assert.AreEqual(2, blocks.Count(b => b.Shortcut.Count == 1), "the two projection shortcuts, batch norm folded into their 1x1 convolution");
            Assert.IsTrue(blocks.All(b => b.Body.Count == 2), "conv1+bn1+relu1 and conv2+bn2");
        }

        [TestMethod]
        public void ChannelSelectionsThatBreakTheNetworkAreRefused()
        {
            var groups = ChannelGroups.Find(Definition(ImageClassifierArchitecture.VggSmall));
            ChannelGroup conv2 = groups.Single(g => g.Name == "conv2");
            var empty = Assert.ThrowsExactly<ArgumentException>(() => new ChannelSelection(new[] { (conv2, Array.Empty<long>()) }));
            StringAssert.Contains(empty.Message, "'conv2' must keep at least one channel");
            var outOfRange = Assert.ThrowsExactly<ArgumentException>(() => new ChannelSelection(new[] { (conv2, new long[] { 3, 32 }) }));
            StringAssert.Contains(outOfRange.Message, "below 32");
            ChannelGroup logits = groups.Single(g => g.Name == "fc2");
            var fixedGroup = Assert.ThrowsExactly<ArgumentException>(() => new ChannelSelection(new[] { (logits, new long[] { 0, 1 }) }));
            StringAssert.Contains(fixedGroup.Message, "'fc2' cannot lose channels");
        }
    }
}
