using System.Text.Json;

namespace Producer;

/// <summary>The producer's settings, read from a small JSON file (like the Node sample's config.js).</summary>
/// <param name="StreamName">The stream to put records into; created when missing.</param>
/// <param name="ShardCount">How many shards a created stream gets.</param>
/// <param name="Region">The AWS region; null means AWS_REGION.</param>
/// <param name="Endpoint">The Kinesis endpoint, e.g. an emulator's http://127.0.0.1:4567; null means the region's.</param>
/// <param name="Records">How many records to put.</param>
/// <param name="BatchSize">How many records each PutRecords call carries (at most 500).</param>
public sealed record ProducerConfig(string StreamName, int ShardCount, string? Region, string? Endpoint, int Records, int BatchSize)
{
    private static readonly JsonSerializerOptions Options = new() { PropertyNameCaseInsensitive = true, ReadCommentHandling = JsonCommentHandling.Skip };

    /// <summary>Reads the file, then applies --stream, --endpoint, --region and --records overrides.</summary>
    /// <param name="path">The JSON file.</param>
    /// <param name="overrides">Command-line options after the file name.</param>
    /// <returns>The settings, checked.</returns>
    public static ProducerConfig Load(string path, IReadOnlyList<string> overrides)
    {
        var config = JsonSerializer.Deserialize<ProducerConfig>(File.ReadAllText(path), Options)
                     ?? throw new InvalidDataException($"{path} is empty");
        for (var i = 0; i + 1 < overrides.Count; i += 2)
        {
            var value = overrides[i + 1];
            config = overrides[i] switch
            {
                "--stream" => config with { StreamName = value },
                "--endpoint" => config with { Endpoint = value },
                "--region" => config with { Region = value },
                "--records" => config with { Records = int.Parse(value) },
                "--shards" => config with { ShardCount = int.Parse(value) },
                var other => throw new ArgumentException($"unknown option {other}: expected --stream, --endpoint, --region, --records or --shards"),
            };
        }

        if (overrides.Count % 2 != 0) throw new ArgumentException($"option {overrides[^1]} needs a value");
        if (string.IsNullOrWhiteSpace(config.StreamName)) throw new InvalidDataException($"{path}: streamName is missing");
        if (config.ShardCount < 1) throw new InvalidDataException($"{path}: shardCount must be at least 1");
        if (config.BatchSize is < 1 or > 500) throw new InvalidDataException($"{path}: batchSize must be 1 to 500");
        return config;
    }
}
