// Licensed under the MIT license.

using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.ML.Data;
using Microsoft.ML.Pruning.Data;
using Microsoft.ML.Pruning.Networks;
using Microsoft.ML.Pruning.Pruners;
using Microsoft.ML.Pruning.Tests.Data;
using Microsoft.ML.Pruning.Tests.Pruners;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using PruningService;
using SkiaSharp;

namespace Microsoft.ML.Pruning.Tests.Service
{
    /// <summary>
    /// The web service sample (<c>samples/PruningService</c>), hosted in memory: its predictions against the library's
    /// own for the same image files, its answers to bad requests, concurrent clients, <c>/model</c>, <c>/health</c> and the
    /// OpenAPI description.
    /// </summary>
    [TestClass]
    public sealed class PruningServiceTests
    {
        private const int Side = 12;
        private const int MaxImageBytes = 4096;
        private const int MaxImages = 20;

        private static string s_directory = null!;
        private static string s_zip = null!;
        private static ITransformer s_model = null!;
        private static byte[][] s_images = null!;
        private static byte[] s_large = null!;
        private static (string Label, float[] Scores)[] s_expected = null!;
        private static (string Label, float[] Scores) s_expectedLarge;
        private static WebApplicationFactory<Program> s_factory = null!;

        [ClassInitialize]
        public static void TrainAndServe(TestContext context)
        {
            // LeNet-300-100 on 1x12x12 synthetic images, pruned by magnitude: a real model of the library, saved as an
            // application would save it.
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 256, channels: 1, height: Side, width: Side);
            ITransformer dense = PrunerTestModels.Train(ml, train, ImageClassifierArchitecture.LeNet300100, epochs: 2);
            s_model = ml.Transforms.PruneMagnitude(dense, new MagnitudePruner.Options { KeptFraction = 0.3 }).Fit(train);
            s_zip = PrunerTestModels.TempZip();
            ml.Model.Save(s_model, train.Schema, s_zip);

            // Sixteen test images as PNG files, and one at twice the size, scored by the library's own pipeline for image
            // files: LoadImagePaths → LoadImagePixels(model) → the model.
            s_directory = Path.Combine(Path.GetTempPath(), "pruning-service-" + Guid.NewGuid().ToString("N"));
            List<ImageRow> rows = SyntheticImages.Rows(16, 1, Side, Side, seed: 7);
            s_images = rows.Select(row => Png(row.Features, Side)).ToArray();
            s_large = Png(Upscale(rows[1].Features, Side), 2 * Side);
            Directory.CreateDirectory(Path.Combine(s_directory, "small"));
            Directory.CreateDirectory(Path.Combine(s_directory, "large"));
            for (int i = 0; i < s_images.Length; i++)
                File.WriteAllBytes(Path.Combine(s_directory, "small", $"{i:D2}.png"), s_images[i]);
            File.WriteAllBytes(Path.Combine(s_directory, "large", "00.png"), s_large);
            (string, float[])[] library = LibraryPredictions(ml, s_model, s_directory);
            s_expectedLarge = library[0];
            s_expected = library[1..];

            s_factory = Serve(new Dictionary<string, string?>
            {
                ["Model:Path"] = s_zip,
                ["Predict:MaxImageBytes"] = MaxImageBytes.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["Predict:MaxImagesPerRequest"] = MaxImages.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
        }

        [ClassCleanup]
        public static void Cleanup()
        {
            s_factory?.Dispose();
            if (s_model is not null)
                PrunerTestModels.DisposeAll(s_model);
            if (s_zip is not null)
                File.Delete(s_zip);
            DataTestFiles.DeleteDirectory(s_directory);
        }

        [TestMethod]
        public async Task ServicePredictionsEqualTheLibrarysForTheSameImageFiles()
        {
            using HttpClient client = s_factory.CreateClient();
            for (int i = 0; i < s_images.Length; i++)
            {
                JsonElement answer = await PostImage(client, s_images[i]);
                AssertPrediction(s_expected[i], answer, $"image {i}");
                Assert.AreEqual("png", answer.GetProperty("image").GetProperty("format").GetString());
                Assert.AreEqual(Side, answer.GetProperty("image").GetProperty("width").GetInt32());
                Assert.IsFalse(answer.GetProperty("image").GetProperty("resized").GetBoolean());
                Assert.IsFalse(answer.TryGetProperty("file", out _), "no file name for a raw body");
            }
            // The model separates the synthetic classes: the predictions are the images' own labels.
            CollectionAssert.AreEqual(SyntheticImages.Rows(16, 1, Side, Side, seed: 7).Select(r => r.Label).ToArray(), s_expected.Select(e => e.Label).ToArray());
        }

        [TestMethod]
        public async Task ServiceScoresMultipartFilesInTheirOrder()
        {
            using HttpClient client = s_factory.CreateClient();
            using var form = new MultipartFormDataContent();
            for (int i = 0; i < s_images.Length; i++)
                form.Add(new ByteArrayContent(s_images[i]) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } }, "images", $"{i:D2}.png");
            form.Add(new ByteArrayContent(s_large), "images", "large.png");
            using HttpResponseMessage response = await client.PostAsync("/predict", form);
            Assert.AreEqual(HttpStatusCode.OK, response.StatusCode, await response.Content.ReadAsStringAsync());
            JsonElement[] predictions = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("predictions").EnumerateArray().ToArray();
            Assert.HasCount(17, predictions);
            for (int i = 0; i < s_images.Length; i++)
            {
                Assert.AreEqual($"{i:D2}.png", predictions[i].GetProperty("file").GetString());
                AssertPrediction(s_expected[i], predictions[i], $"file {i}");
            }
            AssertPrediction(s_expectedLarge, predictions[16], "large.png");
            Assert.IsTrue(predictions[16].GetProperty("image").GetProperty("resized").GetBoolean());
        }

        [TestMethod]
        public async Task ServiceResizesImagesOfAnotherSizeAsTheLibrarysPipelineDoes()
        {
            using HttpClient client = s_factory.CreateClient();
            JsonElement answer = await PostImage(client, s_large);
            AssertPrediction(s_expectedLarge, answer, "24x24 image");
            JsonElement image = answer.GetProperty("image");
            Assert.AreEqual(2 * Side, image.GetProperty("width").GetInt32());
            Assert.AreEqual(2 * Side, image.GetProperty("height").GetInt32());
            Assert.IsTrue(image.GetProperty("resized").GetBoolean());
        }

        [TestMethod]
        public async Task ServiceWithResizingOffRefusesImagesOfAnotherSize()
        {
            using WebApplicationFactory<Program> factory = Serve(new Dictionary<string, string?> { ["Model:Path"] = s_zip, ["Predict:ResizeImages"] = "false" });
            using HttpClient client = factory.CreateClient();
            await AssertRefused(client, new ByteArrayContent(s_large),
                "The request body is 24x24 pixels; the model takes 12x12 images (Predict:ResizeImages is off).");
            AssertPrediction(s_expected[3], await PostImage(client, s_images[3]), "an image of the model's size");
        }

        [TestMethod]
        public async Task ServiceAnswersBadRequestsWith400AndAMessage()
        {
            using HttpClient client = s_factory.CreateClient();
            await AssertRefused(client, new ByteArrayContent(Array.Empty<byte>()), "The request body is empty: send the bytes of a PNG or JPEG image.");
            await AssertRefused(client, new StringContent("not an image"), "The request body is not a PNG or JPEG image.");
            await AssertRefused(client, new ByteArrayContent(Encoded(SKEncodedImageFormat.Webp)), "The request body is a WEBP image; the service takes PNG or JPEG.");
            byte[] tooLarge = new byte[MaxImageBytes + 1];
            s_images[0].CopyTo(tooLarge, 0);
            await AssertRefused(client, new ByteArrayContent(tooLarge), "The request body is 4,097 bytes; the limit is 4,096 bytes (Predict:MaxImageBytes).");
            // A PNG cut after its header: the header is read, the pixels are not there.
            await AssertRefused(client, new ByteArrayContent(s_large[..(s_large.Length / 2)]), "The request body could not be decoded as PNG: the data ends before the image does.");

            using (var empty = new MultipartFormDataContent { { new StringContent("x"), "note" } })
                await AssertRefused(client, empty, "The form holds no files: send each image as a file part of the multipart/form-data body.");
            using (var tooMany = new MultipartFormDataContent())
            {
                for (int i = 0; i <= MaxImages; i++)
                    tooMany.Add(new ByteArrayContent(s_images[0]), "images", $"{i}.png");
                await AssertRefused(client, tooMany, $"The form holds {MaxImages + 1} files; the limit is {MaxImages} (Predict:MaxImagesPerRequest).");
            }
            using (var oneBad = new MultipartFormDataContent { { new ByteArrayContent(s_images[0]), "images", "good.png" }, { new StringContent("text"), "images", "notes.txt" } })
                await AssertRefused(client, oneBad, "File 'notes.txt' is not a PNG or JPEG image.");
        }

        [TestMethod]
        public async Task SixteenConcurrentClientsGetTheSameAnswersAsOne()
        {
            using HttpClient single = s_factory.CreateClient();
            var alone = new string[s_images.Length];
            for (int i = 0; i < s_images.Length; i++)
                alone[i] = (await PostImage(single, s_images[i])).GetRawText();

            // Each client posts every image four times, starting at a different one.
            string[][] concurrent = await Task.WhenAll(Enumerable.Range(0, 16).Select(c => Task.Run(async () =>
            {
                using HttpClient client = s_factory.CreateClient();
                var answers = new string[s_images.Length];
                for (int k = 0; k < 4 * s_images.Length; k++)
                {
                    int i = (c + k) % s_images.Length;
                    string answer = (await PostImage(client, s_images[i])).GetRawText();
                    if (answers[i] is not null && answers[i] != answer)
                        Assert.Fail($"client {c} got two answers for image {i}");
                    answers[i] = answer;
                }
                return answers;
            })));
            for (int c = 0; c < concurrent.Length; c++)
                CollectionAssert.AreEqual(alone, concurrent[c], $"client {c}");
        }

        [TestMethod]
        public async Task ModelEndpointGivesTheLibrarysSummary()
        {
            using HttpClient client = s_factory.CreateClient();
            JsonElement model = await client.GetFromJsonAsync<JsonElement>("/model");
            Reports.ModelSummary summary = s_model.GetSummary();
            Assert.AreEqual(Path.GetFullPath(s_zip), model.GetProperty("path").GetString());
            Assert.AreEqual("lenet300", model.GetProperty("architecture").GetString());
            Assert.AreEqual("sparse", model.GetProperty("method").GetString());
            Assert.AreEqual("1x12x12", model.GetProperty("input").GetString());
            CollectionAssert.AreEqual(SyntheticImages.ClassNames, model.GetProperty("classes").EnumerateArray().Select(c => c.GetString()).ToArray());
            Assert.AreEqual(summary.Parameters, model.GetProperty("parameters").GetInt64());
            Assert.AreEqual(summary.NonZeroParameters, model.GetProperty("nonZeroParameters").GetInt64());
            Assert.IsLessThan(summary.Parameters / 2, summary.NonZeroParameters, "30% of the weights kept");
            Assert.AreEqual(summary.MultiplyAccumulates, model.GetProperty("multiplyAccumulates").GetInt64());
            Assert.AreEqual(summary.NonZeroMultiplyAccumulates, model.GetProperty("nonZeroMultiplyAccumulates").GetInt64());
            Assert.AreEqual(summary.SerializedBytes, model.GetProperty("serializedBytes").GetInt64());
            Assert.AreEqual(new FileInfo(s_zip).Length, model.GetProperty("zipBytes").GetInt64());
            CollectionAssert.AreEqual(new[] { "fc1", "fc2", "fc3" }, model.GetProperty("layers").EnumerateArray()
                .Where(l => l.GetProperty("parameters").GetInt64() > 0).Select(l => l.GetProperty("path").GetString()![^3..]).ToArray());
        }

        [TestMethod]
        public async Task MethodIsReadFromTheStoredNetwork()
        {
            var ml = new MLContext(seed: 1);
            IDataView train = SyntheticImages.Load(ml, 64, channels: 1, height: 28, width: 28);
            ITransformer dense = PrunerTestModels.Train(ml, train, ImageClassifierArchitecture.LeNet5, epochs: 1);
            ITransformer channels = ml.Transforms.PruneChannels(dense, new ChannelPruner.Options { KeptChannelFraction = 0.5 }).Fit(train);
            try
            {
                Assert.AreEqual("dense", await MethodOf(ml, dense, train));
                Assert.AreEqual("channels", await MethodOf(ml, channels, train));
            }
            finally
            {
                PrunerTestModels.DisposeAll(channels);
                PrunerTestModels.DisposeAll(dense);
            }
        }

        [TestMethod]
        public async Task HealthScoresABlankImage()
        {
            using HttpClient client = s_factory.CreateClient();
            using HttpResponseMessage response = await client.GetAsync("/health");
            Assert.AreEqual(HttpStatusCode.OK, response.StatusCode);
            Assert.AreEqual("Healthy", await response.Content.ReadAsStringAsync());
        }

        [TestMethod]
        public async Task OpenApiDescribesTheEndpoints()
        {
            using HttpClient client = s_factory.CreateClient();
            JsonElement document = await client.GetFromJsonAsync<JsonElement>("/openapi/v1.json");
            JsonElement paths = document.GetProperty("paths");
            JsonElement predict = paths.GetProperty("/predict").GetProperty("post");
            CollectionAssert.AreEquivalent(new[] { "image/png", "image/jpeg", "multipart/form-data" },
                predict.GetProperty("requestBody").GetProperty("content").EnumerateObject().Select(p => p.Name).ToArray());
            CollectionAssert.AreEquivalent(new[] { "200", "400" }, predict.GetProperty("responses").EnumerateObject().Select(p => p.Name).ToArray());
            Assert.IsTrue(paths.GetProperty("/model").TryGetProperty("get", out _));
            StringAssert.Contains(await client.GetStringAsync("/"), "<input type=\"file\"");
        }

        [TestMethod]
        public void AModelThatCannotBeServedStopsTheStartSayingWhy()
        {
            string missing = Path.Combine(s_directory, "missing.zip");
            AssertStartFails(new() { ["Model:Path"] = "" }, "No model to serve: set Model:Path to a model zip saved with mlContext.Model.Save");
            AssertStartFails(new() { ["Model:Path"] = missing }, $"Model:Path '{missing}' does not exist.");
            string notAModel = Path.Combine(s_directory, "not-a-model.zip");
            File.WriteAllText(notAModel, "not a zip");
            AssertStartFails(new() { ["Model:Path"] = notAModel }, $"Model:Path '{notAModel}' is not a model zip this service can load: ");
            AssertStartFails(new() { ["Model:Path"] = s_zip, ["Predict:MaxImageBytes"] = "0" }, "Predict:MaxImageBytes, Predict:MaxImagesPerRequest and Predict:MaxImageSide must be positive");
        }

        private static WebApplicationFactory<Program> Serve(Dictionary<string, string?> settings)
            => new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
            {
                builder.UseEnvironment("Production");
                builder.ConfigureAppConfiguration((_, configuration) => configuration.AddInMemoryCollection(settings));
            });

        /// <summary>Runs the service's Main, as <c>dotnet PruningService.dll</c> does, and checks that it exits 1 saying why.</summary>
        private static void AssertStartFails(Dictionary<string, string?> settings, string message)
        {
            string[] args = settings.Select(s => $"--{s.Key}={s.Value}").Append("--urls=http://127.0.0.1:0").ToArray();
            // The model loads as the host starts, before Kestrel listens.
            using (WebApplication app = ServiceApp.Create(args))
            {
                var ex = Assert.ThrowsExactly<ModelLoadException>(() => app.StartAsync().GetAwaiter().GetResult());
                StringAssert.StartsWith(ex.Message, message);
            }

            TextWriter error = Console.Error;
            using var written = new StringWriter();
            Console.SetError(written);
            try
            {
                Assert.AreEqual(1, Program.Main(args));
            }
            finally
            {
                Console.SetError(error);
            }
            StringAssert.StartsWith(written.ToString(), "PruningService cannot start: " + message);
        }

        private static async Task<string?> MethodOf(MLContext ml, ITransformer model, IDataView data)
        {
            string zip = PrunerTestModels.TempZip();
            try
            {
                ml.Model.Save(model, data.Schema, zip);
                using WebApplicationFactory<Program> factory = Serve(new Dictionary<string, string?> { ["Model:Path"] = zip });
                using HttpClient client = factory.CreateClient();
                return (await client.GetFromJsonAsync<JsonElement>("/model")).GetProperty("method").GetString();
            }
            finally
            {
                File.Delete(zip);
            }
        }

        private static async Task<JsonElement> PostImage(HttpClient client, byte[] image)
        {
            using var content = new ByteArrayContent(image) { Headers = { ContentType = new MediaTypeHeaderValue("image/png") } };
            using HttpResponseMessage response = await client.PostAsync("/predict", content);
            Assert.AreEqual(HttpStatusCode.OK, response.StatusCode, await response.Content.ReadAsStringAsync());
            return await response.Content.ReadFromJsonAsync<JsonElement>();
        }

        private static async Task AssertRefused(HttpClient client, HttpContent content, string detail)
        {
            using (content)
            using (HttpResponseMessage response = await client.PostAsync("/predict", content))
            {
                string body = await response.Content.ReadAsStringAsync();
                Assert.AreEqual(HttpStatusCode.BadRequest, response.StatusCode, body);
                Assert.AreEqual("application/problem+json", response.Content.Headers.ContentType?.MediaType);
                JsonElement problem = JsonDocument.Parse(body).RootElement;
                Assert.AreEqual(400, problem.GetProperty("status").GetInt32());
                Assert.AreEqual("The request cannot be scored.", problem.GetProperty("title").GetString());
                StringAssert.StartsWith(problem.GetProperty("detail").GetString(), detail);
            }
        }

        private static void AssertPrediction((string Label, float[] Scores) expected, JsonElement answer, string what)
        {
            Assert.AreEqual(expected.Label, answer.GetProperty("label").GetString(), what);
            JsonElement[] scores = answer.GetProperty("scores").EnumerateArray().ToArray();
            CollectionAssert.AreEqual(SyntheticImages.ClassNames, scores.Select(s => s.GetProperty("label").GetString()).ToArray(), what);
            CollectionAssert.AreEqual(expected.Scores, scores.Select(s => s.GetProperty("score").GetSingle()).ToArray(), what);
            Assert.AreEqual(expected.Scores.Max(), answer.GetProperty("score").GetSingle(), what);
        }

        /// <summary>
        /// The library's own predictions for the files in <paramref name="directory"/>, in the order of their paths: a
        /// prediction engine over <c>LoadImagePixels(model)</c> and the model, one image per call as the service scores.
        /// </summary>
        private static (string Label, float[] Scores)[] LibraryPredictions(MLContext ml, ITransformer model, string directory)
        {
            IDataView paths = ml.Data.LoadImagePaths(directory);
            ITransformer pixels = ml.Transforms.LoadImagePixels(model).Fit(paths);
            // Not disposed: an engine owns the chain it scores with, and the model serves the other tests.
            var engine = ml.Model.CreatePredictionEngine<FileRow, FilePrediction>(new TransformerChain<ITransformer>(pixels, model));
            return paths.GetColumn<string>(ImageFolderCatalog.ImagePathColumnName)
                .Select(path => engine.Predict(new FileRow { ImagePath = path }))
                .Select(p => (p.PredictedLabel, p.Score)).ToArray();
        }

        private static byte[] Png(float[] pixels, int side)
        {
            using var bitmap = new SKBitmap(new SKImageInfo(side, side, SKColorType.Gray8, SKAlphaType.Opaque));
            for (int y = 0; y < side; y++)
            {
                for (int x = 0; x < side; x++)
                {
                    byte level = (byte)Math.Clamp(MathF.Round(pixels[y * side + x] * 255), 0, 255);
                    bitmap.SetPixel(x, y, new SKColor(level, level, level));
                }
            }
            using SKData png = bitmap.Encode(SKEncodedImageFormat.Png, 100);
            return png.ToArray();
        }

        private static float[] Upscale(float[] pixels, int side)
        {
            var large = new float[4 * side * side];
            for (int y = 0; y < 2 * side; y++)
            {
                for (int x = 0; x < 2 * side; x++)
                    large[y * 2 * side + x] = pixels[y / 2 * side + x / 2];
            }
            return large;
        }

        private static byte[] Encoded(SKEncodedImageFormat format)
        {
            using var bitmap = new SKBitmap(new SKImageInfo(Side, Side, SKColorType.Rgba8888, SKAlphaType.Unpremul));
            bitmap.Erase(SKColors.Gray);
            using SKData data = bitmap.Encode(format, 100);
            return data.ToArray();
        }

        private sealed class FileRow
        {
            public string Label { get; set; } = "";

            public string ImagePath { get; set; } = "";
        }

        private sealed class FilePrediction
        {
            public string PredictedLabel { get; set; } = "";

            public float[] Score { get; set; } = Array.Empty<float>();
        }
    }
}
