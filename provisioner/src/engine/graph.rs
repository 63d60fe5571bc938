//! The resource graph: built from the desired set, checked for cycles and missing dependencies,
//! ordered topologically, and weighed with per-type duration estimates for the critical path.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::time::Duration;

use super::types::TypeCatalog;
use super::{Address, DesiredSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("resource `{0}` is declared twice")]
    Duplicate(Address),
    #[error("`{resource}` depends on `{missing}`, which the stack does not declare")]
    MissingDependency { resource: Address, missing: Address },
    #[error("dependency cycle: {}", .0.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" -> "))]
    Cycle(Vec<Address>),
}

/// Nodes are indexes into `addresses`; `dependencies[i]` lists what node `i` needs first.
#[derive(Debug, Clone)]
pub struct ResourceGraph {
    addresses: Vec<Address>,
    index: HashMap<Address, usize>,
    dependencies: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// A topological order (dependencies first), stable: ties keep declaration order.
    order: Vec<usize>,
}

/// The longest chain of estimated durations through the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalPath {
    pub path: Vec<Address>,
    pub total: Duration,
}

impl ResourceGraph {
    pub fn build(desired: &DesiredSet) -> Result<Self, GraphError> {
        let edges = desired
            .resources
            .iter()
            .map(|r| (r.address.clone(), r.all_dependencies()))
            .collect::<Vec<_>>();
        Self::from_edges(edges)
    }

    /// Builds a graph from `(address, dependencies)` pairs in declaration order.
    pub fn from_edges(edges: Vec<(Address, Vec<Address>)>) -> Result<Self, GraphError> {
        let mut index = HashMap::new();
        let mut addresses = Vec::new();
        for (address, _) in &edges {
            if index.insert(address.clone(), addresses.len()).is_some() {
                return Err(GraphError::Duplicate(address.clone()));
            }
            addresses.push(address.clone());
        }
        let mut dependencies = vec![Vec::new(); addresses.len()];
        let mut dependents = vec![Vec::new(); addresses.len()];
        for (node, (address, deps)) in edges.iter().enumerate() {
            for dep in deps {
                let Some(&dep_node) = index.get(dep) else {
                    return Err(GraphError::MissingDependency {
                        resource: address.clone(),
                        missing: dep.clone(),
                    });
                };
                if dep_node == node {
                    return Err(GraphError::Cycle(vec![address.clone(), address.clone()]));
                }
                if !dependencies[node].contains(&dep_node) {
                    dependencies[node].push(dep_node);
                    dependents[dep_node].push(node);
                }
            }
        }
        let mut graph = Self {
            addresses,
            index,
            dependencies,
            dependents,
            order: Vec::new(),
        };
        graph.order = graph.topological_order()?;
        Ok(graph)
    }

    fn topological_order(&self) -> Result<Vec<usize>, GraphError> {
        let count = self.addresses.len();
        let mut remaining: Vec<usize> = self.dependencies.iter().map(Vec::len).collect();
        let mut ready: BTreeSet<usize> = (0..count).filter(|&n| remaining[n] == 0).collect();
        let mut order = Vec::with_capacity(count);
        while let Some(node) = ready.pop_first() {
            order.push(node);
            for &dependent in &self.dependents[node] {
                remaining[dependent] -= 1;
                if remaining[dependent] == 0 {
                    ready.insert(dependent);
                }
            }
        }
        if order.len() == count {
            Ok(order)
        } else {
            Err(GraphError::Cycle(self.find_cycle(&remaining)))
        }
    }

    /// Walks dependency edges among the nodes left over by Kahn's algorithm until one repeats.
    fn find_cycle(&self, remaining: &[usize]) -> Vec<Address> {
        let start = (0..remaining.len())
            .find(|&n| remaining[n] > 0)
            .unwrap_or(0);
        let mut seen: Vec<usize> = Vec::new();
        let mut node = start;
        loop {
            if let Some(position) = seen.iter().position(|&n| n == node) {
                let mut cycle: Vec<Address> = seen[position..]
                    .iter()
                    .map(|&n| self.addresses[n].clone())
                    .collect();
                cycle.push(self.addresses[node].clone());
                return cycle;
            }
            seen.push(node);
            node = match self.dependencies[node].iter().find(|&&d| remaining[d] > 0) {
                Some(&next) => next,
                None => return seen.iter().map(|&n| self.addresses[n].clone()).collect(),
            };
        }
    }

    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    pub fn contains(&self, address: &Address) -> bool {
        self.index.contains_key(address)
    }

    /// Addresses in topological order: every resource after all its dependencies.
    pub fn ordered(&self) -> Vec<&Address> {
        self.order.iter().map(|&n| &self.addresses[n]).collect()
    }

    pub fn dependencies_of(&self, address: &Address) -> Vec<&Address> {
        self.index
            .get(address)
            .map(|&n| {
                self.dependencies[n]
                    .iter()
                    .map(|&d| &self.addresses[d])
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn dependents_of(&self, address: &Address) -> Vec<&Address> {
        self.index
            .get(address)
            .map(|&n| {
                self.dependents[n]
                    .iter()
                    .map(|&d| &self.addresses[d])
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The longest path by summed durations, where `duration(address)` weighs each node.
    pub fn critical_path(&self, duration: &dyn Fn(&Address) -> Duration) -> CriticalPath {
        let mut finish: Vec<Duration> = vec![Duration::ZERO; self.len()];
        let mut previous: Vec<Option<usize>> = vec![None; self.len()];
        for &node in &self.order {
            let (start, via) = self.dependencies[node]
                .iter()
                .map(|&d| (finish[d], Some(d)))
                .max_by_key(|(t, _)| *t)
                .unwrap_or((Duration::ZERO, None));
            finish[node] = start + duration(&self.addresses[node]);
            previous[node] = via;
        }
        let Some(last) = (0..self.len()).max_by_key(|&n| (finish[n], std::cmp::Reverse(n))) else {
            return CriticalPath {
                path: Vec::new(),
                total: Duration::ZERO,
            };
        };
        let mut path = vec![self.addresses[last].clone()];
        let mut node = last;
        while let Some(prev) = previous[node] {
            path.push(self.addresses[prev].clone());
            node = prev;
        }
        path.reverse();
        CriticalPath {
            path,
            total: finish[last],
        }
    }

    /// Graphviz DOT: one node per resource labelled with its type and estimate, edges from
    /// dependency to dependent, the critical path drawn bold red.
    pub fn to_dot(&self, desired: &DesiredSet, catalog: &TypeCatalog) -> String {
        let estimate = |address: &Address| {
            desired
                .get(address)
                .map(|r| catalog.spec(&r.resource_type).estimated_duration)
                .unwrap_or_default()
        };
        let critical = self.critical_path(&estimate);
        let on_path: BTreeSet<&Address> = critical.path.iter().collect();
        let critical_edges: BTreeSet<(&Address, &Address)> =
            critical.path.windows(2).map(|w| (&w[0], &w[1])).collect();
        let mut dot = String::new();
        let _ = writeln!(dot, "digraph \"{}\" {{", escape(&desired.stack));
        let _ = writeln!(dot, "  rankdir=LR;");
        let _ = writeln!(dot, "  node [shape=box, fontname=\"monospace\"];");
        let _ = writeln!(
            dot,
            "  label=\"critical path: {} ({})\";",
            format_duration(critical.total),
            critical.path.len()
        );
        for &node in &self.order {
            let address = &self.addresses[node];
            let type_name = desired
                .get(address)
                .map(|r| r.resource_type.to_string())
                .unwrap_or_default();
            let style = if on_path.contains(address) {
                ", color=red, penwidth=2, style=bold"
            } else {
                ""
            };
            let _ = writeln!(
                dot,
                "  \"{}\" [label=\"{}\\n{}\\n~{}\"{}];",
                escape(address.as_str()),
                escape(address.as_str()),
                escape(&type_name),
                format_duration(estimate(address)),
                style
            );
        }
        for &node in &self.order {
            for &dep in &self.dependencies[node] {
                let (from, to) = (&self.addresses[dep], &self.addresses[node]);
                let style = if critical_edges.contains(&(from, to)) {
                    " [color=red, penwidth=2]"
                } else {
                    ""
                };
                let _ = writeln!(
                    dot,
                    "  \"{}\" -> \"{}\"{};",
                    escape(from.as_str()),
                    escape(to.as_str()),
                    style
                );
            }
        }
        dot.push_str("}\n");
        dot
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// `15m`, `2m30s`, `5s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (minutes, seconds) = (total / 60, total % 60);
    match (minutes, seconds) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::DesiredResource;

    fn set(resources: Vec<DesiredResource>) -> DesiredSet {
        DesiredSet {
            stack: "t".into(),
            instance: None,
            resources,
        }
    }

    #[test]
    fn orders_dependencies_first_and_finds_the_critical_path() {
        let a = Address::new("a");
        let b = Address::new("b");
        let desired = set(vec![
            DesiredResource::new("c", "slow").after(&b),
            DesiredResource::new("b", "fast").after(&a),
            DesiredResource::new("a", "fast"),
            DesiredResource::new("d", "fast").after(&a),
        ]);
        let graph = ResourceGraph::build(&desired).unwrap();
        let order: Vec<String> = graph.ordered().iter().map(|a| a.to_string()).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        let weights = |addr: &Address| match addr.as_str() {
            "c" => Duration::from_secs(100),
            "d" => Duration::from_secs(50),
            _ => Duration::from_secs(1),
        };
        let critical = graph.critical_path(&weights);
        assert_eq!(critical.total, Duration::from_secs(102));
        assert_eq!(critical.path, vec![a, b, Address::new("c")]);
    }

    #[test]
    fn reports_cycles_and_missing_dependencies() {
        let desired = set(vec![
            DesiredResource::new("a", "t").after(&Address::new("b")),
            DesiredResource::new("b", "t").after(&Address::new("c")),
            DesiredResource::new("c", "t").after(&Address::new("a")),
        ]);
        match ResourceGraph::build(&desired) {
            Err(GraphError::Cycle(cycle)) => {
                assert_eq!(cycle.len(), 4);
                assert_eq!(cycle.first(), cycle.last());
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
        let desired = set(vec![
            DesiredResource::new("a", "t").after(&Address::new("zz")),
        ]);
        assert!(matches!(
            ResourceGraph::build(&desired),
            Err(GraphError::MissingDependency { .. })
        ));
    }

    #[test]
    fn dot_marks_the_critical_path() {
        let a = Address::new("a");
        let desired = set(vec![
            DesiredResource::new("a", "aws.ec2.vpc"),
            DesiredResource::new("b", "aws.eks.cluster").after(&a),
            DesiredResource::new("c", "aws.ec2.subnet").after(&a),
        ]);
        let graph = ResourceGraph::build(&desired).unwrap();
        let dot = graph.to_dot(&desired, &TypeCatalog::builtin());
        assert!(
            dot.contains("\"a\" -> \"b\" [color=red, penwidth=2];"),
            "{dot}"
        );
        assert!(dot.contains("\"a\" -> \"c\";"), "{dot}");
        assert!(dot.contains("critical path: 15m5s"), "{dot}");
    }
}
