// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Training;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using TorchSharp;
using static TorchSharp.torch;

namespace Microsoft.ML.Pruning.Tests.Training
{
    [TestClass]
    public sealed class TrainingHooksTests
    {
        [TestMethod]
        public void TrainingThatDivergesStopsNamingTheEpochAndStep()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 64);
            var options = new ImageClassifierTrainer.Options { Architecture = ImageClassifierArchitecture.LeNet300100, Epochs = 3, BatchSize = 16, LearningRate = 1e30, LearningRateSchedule = LearningRateSchedule.Constant };
            var pipeline = SyntheticImages.MapLabel(ml).Append(ml.MulticlassClassification.Trainers.ImageClassifier(options));
            var ex = Assert.ThrowsExactly<InvalidOperationException>(() => pipeline.Fit(train));
            StringAssert.Contains(ex.Message, "training diverged: the loss is");
            StringAssert.Matches(ex.Message, new System.Text.RegularExpressions.Regex(@"at epoch \d+, step \d+ \(learning rate 1E\+30\)\. Lower the learning rate"));
        }

        [TestMethod]
        public void HooksRunInTheirOrderAndAnExtraLossTermChangesTheGradient()
        {
            var definition = Architectures.Create(ImageClassifierArchitecture.LeNet300100, new ImageShape(1, 12, 12), 4);
            var ml = new MLContext(seed: 1);
            using ImageDataset data = ImageDataset.Load(SyntheticImages.MapLabel(ml).Fit(SyntheticImages.Load(ml, 32)).Transform(SyntheticImages.Load(ml, 32)),
                "Features", "Label", new ImageShape(1, 12, 12), 4, "training data", default);

            float[] Train(Func<ClassifierNetwork, TrainingHooks> hooks)
            {
                torch.random.manual_seed(4);
                using ClassifierNetwork network = ClassifierNetwork.Create(definition);
                var settings = new TrainingSettings { Epochs = 1, BatchSize = 16, Optimizer = OptimizerKind.Sgd, Momentum = 0, WeightDecay = 0, Schedule = LearningRateSchedule.Constant };
                TrainingLoop.Run(network, data, null, settings, 3, null, hooks(network), default);
                return network.StateDictionary()["fc3.bias"].data<float>().ToArray();
            }

            var calls = new List<string>();
            float[] plain = Train(_ => TrainingHooks.None);
            float[] observed = Train(_ => new TrainingHooks
            {
                AfterBackward = () => calls.Add("backward"),
                AfterStep = (step, total) => calls.Add($"step {step}/{total}"),
                EpochCompleted = m => calls.Add($"epoch {m.Epoch}"),
            });
            CollectionAssert.AreEqual(new[] { "backward", "step 1/2", "backward", "step 2/2", "epoch 1" }, calls);
            CollectionAssert.AreEqual(plain, observed, "hooks that only observe change nothing");

            // λ·Σ b over fc3's bias: each step moves every bias by −lr·λ more than plain training does.
            float[] pulled = Train(network =>
            {
                var bias = network.NamedParameters().Single(p => p.Name == "fc3.bias").Parameter;
                return new TrainingHooks { ExtraLoss = (_, _) => bias.sum() * 2.0 };
            });
            for (int i = 0; i < plain.Length; i++)
                Assert.AreEqual(plain[i] - 2 * 0.05 * 2, pulled[i], 1e-5, $"bias {i}");
        }
    }
}
