// InfluxDB 2.x and Cloud: the same questions in Flux (bucket `sensors`). Not run by the
// tests (no InfluxDB 2.x can run on the project's machine); checked by hand against the
// Flux documentation.

// The latest reading of one device.
from(bucket: "sensors")
  |> range(start: -7d)
  |> filter(fn: (r) => r._measurement == "environment" and r.device == "greenhouse")
  |> filter(fn: (r) => r._field == "temperature" or r._field == "humidity")
  |> last()

// Hourly means over the last day, per device.
from(bucket: "sensors")
  |> range(start: -24h)
  |> filter(fn: (r) => r._measurement == "environment" and r._field == "temperature")
  |> aggregateWindow(every: 1h, fn: mean, createEmpty: false)

// Lowest and highest temperature per day over the last week.
data = from(bucket: "sensors")
  |> range(start: -7d)
  |> filter(fn: (r) => r._measurement == "environment" and r._field == "temperature")
data |> aggregateWindow(every: 1d, fn: min, createEmpty: false) |> yield(name: "low")
data |> aggregateWindow(every: 1d, fn: max, createEmpty: false) |> yield(name: "high")
