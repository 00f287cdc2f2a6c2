// Puts records into a Kinesis stream, creating it first when it is missing:
//   producer [producer.json] [--stream NAME] [--endpoint URL] [--region R] [--records N] [--shards N]
// Record i has partition key "pk-i" and the UTF-8 text "record i". Exit code 0 when every record was put.
using System.Text;
using Kcl.Kinesis;
using Producer;

var configPath = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal)
    ? args[0]
    : Path.Combine(AppContext.BaseDirectory, "producer.json");
var overrides = args.SkipWhile(a => !a.StartsWith("--", StringComparison.Ordinal)).ToList();

try
{
    var config = ProducerConfig.Load(configPath, overrides);
    using var kinesis = new KinesisClient(new KinesisClientOptions
    {
        Region = config.Region,
        Endpoint = config.Endpoint is null ? null : new Uri(config.Endpoint),
    });
    Console.WriteLine($"stream {config.StreamName} at {kinesis.Endpoint} ({kinesis.Region})");

    try
    {
        await kinesis.DescribeStreamSummaryAsync(config.StreamName);
    }
    catch (KinesisException missing) when (missing.ErrorCode == "ResourceNotFoundException")
    {
        Console.WriteLine($"creating {config.StreamName} with {config.ShardCount} shards");
        await kinesis.CreateStreamAsync(config.StreamName, config.ShardCount);
    }

    var summary = await kinesis.WaitForActiveAsync(config.StreamName, TimeSpan.FromMinutes(5));
    Console.WriteLine($"{summary.StreamName} is {summary.StreamStatus} with {summary.OpenShardCount} open shards");

    var put = 0;
    var batch = 0;
    while (put < config.Records)
    {
        var count = Math.Min(config.BatchSize, config.Records - put);
        var entries = Enumerable.Range(put, count)
            .Select(i => new PutRecordsEntry($"pk-{i}", Encoding.UTF8.GetBytes($"record {i}")))
            .ToList();
        var results = await kinesis.PutRecordsAsync(config.StreamName, entries);
        put += count;
        batch++;
        var shards = results
            .GroupBy(r => r.ShardId)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .Select(g => $"{g.Key}: {g.Count()} records, {g.First().SequenceNumber}..{g.Last().SequenceNumber}");
        Console.WriteLine($"batch {batch}: {put}/{config.Records} put; {string.Join("; ", shards)}");
    }

    Console.WriteLine($"done: {put} records in {batch} batches");
    return 0;
}
catch (Exception e) when (e is KinesisException or InvalidDataException or ArgumentException or IOException or InvalidOperationException or TimeoutException or System.Text.Json.JsonException)
{
    Console.Error.WriteLine($"producer: {e.Message}");
    return 1;
}
