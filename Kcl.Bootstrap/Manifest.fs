/// Maven coordinates of the daemon's jars. The fetcher and launcher arrive with issue 4.
namespace Kcl.Bootstrap

/// One Maven artifact: group, artifact and version.
type Coordinate =
    {
        /// The group id, e.g. "software.amazon.kinesis".
        Group: string
        /// The artifact id, e.g. "amazon-kinesis-client-multilang".
        Artifact: string
        /// The version, e.g. "3.1.3".
        Version: string
    }
